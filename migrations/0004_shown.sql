-- Whether a closed job's final text has reached the user. A job is stored as done (its answer
-- kept, its engine slot free) as soon as the answer is complete, but the platform may confirm
-- the final edit only later (the chat's one-edit-a-second pace, a 429's wait). Until it does,
-- shown = 0 and the next start shows the stored text in the same message. Jobs closed before
-- this column existed count as shown.

ALTER TABLE jobs ADD COLUMN shown INTEGER NOT NULL DEFAULT 1 CHECK (shown IN (0, 1));

CREATE INDEX jobs_unshown ON jobs (id) WHERE shown = 0;
