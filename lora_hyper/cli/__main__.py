"""`python -m lora_hyper.cli`."""

import sys

from lora_hyper.cli import main

sys.exit(main())
