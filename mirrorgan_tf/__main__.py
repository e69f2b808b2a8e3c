"""`python -m mirrorgan_tf` runs the `mirrorgan-tf` command line."""

import sys

from mirrorgan_tf.cli import main

sys.exit(main())
