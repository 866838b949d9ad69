-- The trainer's job queue lives in its own database beside the registry's.
-- Runs once, when the Postgres volume is first initialised; on an older volume
-- the trainer creates the database itself at start-up.
CREATE DATABASE trainer;
