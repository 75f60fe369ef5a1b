"""The embedded demo catalog: licence-documented sample photos from installed packages, served
over real HTTP on 127.0.0.1 in Openverse's search format, so a build can run end to end offline.

- catalog: the records (who made each photo, its licence, the outcome a build must reach);
- photos: the bytes served for each record (package files, generated and broken images);
- server: DemoCatalog, the HTTP server speaking Openverse's search format;
- source: the `demo` source kind's opener (its spec is passkit.sources.demo.DemoSourceSpec).
"""
