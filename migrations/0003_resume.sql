-- What a restarted bot needs to finish the answers it was writing when it died: how often
-- each job was started (a job that keeps killing the bot is not run a third time), and where
-- its reply lives on the platform (the user's message it answers, and the placeholder the
-- answer streams into), so the answer lands in the same message.

ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN source_ref TEXT;
ALTER TABLE jobs ADD COLUMN reply_ref TEXT;
