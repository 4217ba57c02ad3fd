"""bufferpool: see SPEC §2."""
