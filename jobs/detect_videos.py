"""Entry point of the offline job on a Ray cluster; the arguments are those of ``raydetect detect``.

    ray job submit --working-dir . -- python jobs/detect_videos.py SOURCE ... --output DEST [options]

``ray job submit`` sets RAY_ADDRESS for this script, so it joins that cluster; the summary is the
last thing it prints and the exit status is the job's (0 all inputs ok, 3 some failed, 2 bad options).
"""

from __future__ import annotations

import os
import sys

# The working directory shipped with the job holds the raydetect package; make it importable even
# when the cluster's image does not have the project installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raydetect.commands.detect import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
