import sys

from picscope.cli import main

sys.exit(main())
