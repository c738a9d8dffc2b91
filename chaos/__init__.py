"""The fault suite (``make chaos``): the agents as processes, on private services, under faults."""
