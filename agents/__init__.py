"""The seven Kabuto agents, one package each, and the ``kabuto`` command that composes them."""
