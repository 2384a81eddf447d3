-- Migration 4: the admin API of issue 5. Admin tokens get a comment;
-- nodes an expiry (unix ms, 0 = never; an expired node is in no netmap and
-- its credential is refused) and the version its agent reported.
ALTER TABLE admin_tokens ADD COLUMN comment TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN expires {{int}} NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN version TEXT NOT NULL DEFAULT '';
