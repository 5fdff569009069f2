import sys

from raydetect.cli import main

sys.exit(main())
