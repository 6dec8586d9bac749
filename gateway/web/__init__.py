"""Everything ASGI: the app and its middleware, the API, probes, the ops port and the dashboard.

The routes here only parse, call the domain (gateway.store, gateway.launch, gateway.humanlayer) and map
its errors to HTTP; the work itself lives outside this package.
"""
