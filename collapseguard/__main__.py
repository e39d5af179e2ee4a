import sys

from collapseguard.cli import main

sys.exit(main())
