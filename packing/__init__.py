"""packing: see SPEC §2."""
