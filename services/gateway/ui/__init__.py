"""The web console, served by the gateway under ``/ui``: server-rendered pages (Jinja2, every value escaped)
of a tenant's runs, their progress, quality outcomes and dead letters, its definitions, continuous
pipelines and alerts, updated live by server-sent events; a little JavaScript of its own
(``static/console.js``), no asset from anywhere but the gateway.

``routes`` holds the HTTP side, ``views`` what a page shows (from the gateway's in-memory views, the same
the REST API reads), ``session`` the cookie and CSRF rules. Who may see and do what is the REST API's:
``services.gateway.access`` has the console's rules in the one table.

Kept free of imports: ``access`` imports ``session`` from here.
"""
