"""`panel serve app/app.py [--args --data-dir DIR]` serves pocoviz."""

import sys

from pocoviz.ui import create_app, parse_app_args

create_app(parse_app_args(sys.argv[1:]).data_dir).servable(title="pocoviz")
