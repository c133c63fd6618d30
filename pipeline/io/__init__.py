"""Reading and writing files that a kill, a full disk or a hostile file must not turn into a wrong result.

`atomic`: outputs appear whole or not at all; `reading`: bounded, checked reads of files nobody here
wrote; `lock`: one train stage per workspace; `download`: fetching a dataset with limits and retries.
"""
