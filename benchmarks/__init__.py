"""The benchmark harness: frontdesk's paths measured against naive floors in the same run (`make bench`)."""
