"""propstream: streaming propensity scoring (application layer: the command line, the demo, and their library calls).

>>> import propstream
>>> sorted(n for n in propstream.__all__ if n.startswith("run"))
['run_stream']
"""

from schemas.exports import lazy_exports

_EXPORTS = {
    "main": "propstream.cli",
    "build_source": "propstream.app",
    "run_stream": "propstream.app",
    "train": "propstream.app",
    "rescore": "propstream.app",
    "segment": "propstream.app",
    "client_for": "propstream.app",
    "open_store": "propstream.app",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports("propstream", _EXPORTS)
