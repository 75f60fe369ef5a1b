"""Human review of the people filter: a durable SQLite store of decisions and a local web page."""
