"""Running the suite on one machine: `lorafleet up`'s launcher and supervisor."""
