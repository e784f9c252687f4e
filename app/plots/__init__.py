"""Publication figures of the endpoint analyses (issue 9): data in `data`, drawing in `draw`."""
