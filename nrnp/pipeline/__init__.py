"""Orchestration, the only code that reads a ConfigDict: the problem of one target
(`problem`), the one run assembler both entry points call (`assemble`), the CLI's job
(`job`: target and data from the config, report) and the library's `compress`
(`library`), targets loaded or trained (`targets`), finished runs rebuilt (`runs`).
"""
