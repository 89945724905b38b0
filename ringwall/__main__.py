import sys

from ringwall.cli import main

sys.exit(main())
