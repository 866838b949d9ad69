-- Each job-running service keeps its jobs in its own database beside the
-- registry's. Runs once, when the Postgres volume is first initialised; on an
-- older volume each service creates its database itself at start-up.
CREATE DATABASE trainer;
CREATE DATABASE merger;
CREATE DATABASE validator;
CREATE DATABASE gateway;
