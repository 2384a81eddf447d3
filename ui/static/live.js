// live.js keeps the parts of a page marked data-live up to date: every
// data-every milliseconds it fetches the element's data-live URL (a
// fragment of the same page, rendered by the server) and swaps it in.
// Without JavaScript the pages are complete; they are just not refreshed.
(function () {
  'use strict';

  function setStatus(ok) {
    document.querySelectorAll('[data-live-status]').forEach(function (el) {
      el.classList.toggle('stale', !ok);
      var text = el.querySelector('.live-text');
      if (text) {
        text.textContent = ok
          ? 'Live: updated ' + new Date().toLocaleTimeString()
          : 'Not updating: the coordinator does not answer';
      }
    });
  }

  function poll(el) {
    var every = parseInt(el.dataset.every, 10) || 2000;
    var last = null;
    function tick() {
      if (document.hidden) {
        setTimeout(tick, every);
        return;
      }
      fetch(el.dataset.live, { credentials: 'same-origin', cache: 'no-store' })
        .then(function (r) {
          if (r.status === 401) {
            location.reload(); // the session ended: the reload goes to the login page
            return null;
          }
          if (!r.ok) {
            throw new Error('HTTP ' + r.status);
          }
          return r.text();
        })
        .then(function (html) {
          if (html === null) {
            return;
          }
          if (html !== last) {
            el.innerHTML = html;
            last = html;
          }
          setStatus(true);
          setTimeout(tick, every);
        })
        .catch(function () {
          setStatus(false);
          setTimeout(tick, every);
        });
    }
    setTimeout(tick, every);
  }

  document.querySelectorAll('[data-live]').forEach(poll);
})();
