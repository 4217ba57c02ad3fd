"""index: see SPEC §2."""
