package filter

import "golang.zx2c4.com/wireguard/tun"

// Wrap returns dev with f in its data path, for wireguard-go:
//
//   - Write (decrypted packets towards the host) drops the packets f
//     refuses by compacting bufs in place: the packets let in move to the
//     front, in order, and one call to dev.Write gets them at the same
//     offset. Elements of bufs past them are left as they were (the
//     caller's slice is changed; wireguard-go does not use it after
//     Write). It returns len(bufs) when every packet was written or
//     dropped, else dev's count and error.
//   - Read (packets from the host) reads from dev, then records each
//     packet it returns with f.Outbound, also when dev returns an error
//     with packets (tun.ErrTooManySegments).
//
// Only headers are read and nothing is copied, so batches and GSO/GRO
// pass through untouched. The other methods are dev's. Closing the device
// does not close f.
func Wrap(dev tun.Device, f *Filter) tun.Device {
	return &device{Device: dev, f: f}
}

// device is a tun.Device with a filter in its data path.
type device struct {
	tun.Device
	f *Filter
}

// Write filters bufs and writes what passes. Safe for concurrent use, as
// wireguard-go's per-peer goroutines call it.
func (d *device) Write(bufs [][]byte, offset int) (int, error) {
	f := d.f
	now, rs := f.now.Load(), f.rules.Load()
	shard := 0 // a batch comes from one peer: count it in its source's shard
	if len(bufs) > 0 && offset >= 0 && offset <= len(bufs[0]) {
		shard = shardOf(bufs[0][offset:])
	}
	var t tally
	kept := 0
	for _, b := range bufs {
		v := DropMalformed
		if offset >= 0 && offset <= len(b) {
			v = f.inbound(b[offset:], now, rs)
		}
		t[v]++
		if v == Accept {
			bufs[kept] = b
			kept++
		}
	}
	f.count.addTally(shard, &t)
	if kept == 0 {
		return len(bufs), nil
	}
	n, err := d.Device.Write(bufs[:kept], offset)
	if err != nil {
		return n, err
	}
	return len(bufs), nil
}

// Read reads from the device and records the packets read.
func (d *device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.Device.Read(bufs, sizes, offset)
	now := d.f.now.Load()
	for i := 0; i < n && i < len(bufs) && i < len(sizes); i++ {
		if end := offset + sizes[i]; offset >= 0 && sizes[i] > 0 && end <= len(bufs[i]) {
			d.f.outbound(bufs[i][offset:end], now)
		}
	}
	return n, err
}
