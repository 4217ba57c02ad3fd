import sys

# Through the launcher: if another package's __init__.py has replaced this one (Google's
# TensorStore installed into the same site-packages), it says so instead of failing oddly.
from tensorstore_dedup import main

sys.exit(main())
