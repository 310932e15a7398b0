import sys

from qmachina_serving.server import main

sys.exit(main())
