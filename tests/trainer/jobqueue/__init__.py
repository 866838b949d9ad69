"""Tests of the trainer's persisted job queue."""
