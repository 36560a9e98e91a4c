"""Orchestration, where the config is read (besides `training.schedule`, which turns it into
the loop's phases and settings): the two front doors, the command line's `job` (with its
data, `cli_data`, and its target, `targets`) and the library's `library` (with
`library_data`, `library_checks`, `pixels`), the one `RunDescription` both build
(`description`), and the run it describes: `problem`, `calibration`, `compression`
(prepare, run, store) and `stored` (the artefact); config checks (`validation`), workdirs
(`workdirs`, `locks`), downloads before JAX (`fetching`), the process (`environment`),
finished runs rebuilt (`runs`).
"""
