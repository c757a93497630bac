"""tests/apps/basic.py wrapped in Python's own PEP 3333 checker, with its warnings
turned into errors: any way ferricorn's environ, input, errors stream or
start_response strays from the spec fails the request with a 500 and a traceback."""

import warnings
from wsgiref.validate import validator

import basic

warnings.simplefilter("error")
app = validator(basic.app)
