"""``pvdetect serve``: a web page and a JSON API that find PV plants in an area picked on a map.

* :mod:`~pvdetect.serve.settings`: what the server was started with.
* :mod:`~pvdetect.serve.models`: the API's requests and answers (pydantic), area checks.
* :mod:`~pvdetect.serve.sources`: where imagery comes from (a STAC catalog or local scenes).
* :mod:`~pvdetect.serve.mosaic`: the area cut from the local scenes that cover it.
* :mod:`~pvdetect.serve.layers`: PNG quick-looks in Web Mercator for the page's map.
* :mod:`~pvdetect.serve.report`: the self-contained HTML report of a job.
* :mod:`~pvdetect.serve.runner`: what one job does, from imagery to the manifest.
* :mod:`~pvdetect.serve.jobs`: job folders, their state on disk, the worker pool.
* :mod:`~pvdetect.serve.security`: token, host, request size and download path checks.
* :mod:`~pvdetect.serve.app`: the FastAPI application (API, page, OpenAPI docs).

``static/`` holds the page; ``static/vendor/`` the third-party files (Leaflet, Swagger UI) that
``make`` installs with npm from ``web/package-lock.json``. FastAPI and uvicorn come with the
``serve`` extra (``pip install 'pvdetect[serve]'``).
"""
