"""Development tools of this repository that tests import (``scripts.gpu_check``)."""
