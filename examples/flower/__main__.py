import sys

from examples.flower.run import main

sys.exit(main())
