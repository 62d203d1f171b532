"""The compile: user objects in, one validated Config and every problem out (`compile.compile_config`).

`model` is the Config; `rules` one pass of the per-kind checks (`pools`, `peers`, `advertisements`,
`profiles`, with `parse` and `report`); `last_good` keeps the last valid versions across compiles.
"""
