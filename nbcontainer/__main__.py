import sys

from nbcontainer.cli import main

sys.exit(main())
