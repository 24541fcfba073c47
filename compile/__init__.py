"""The compiler on top of everything else: the export pipeline (read -> portable -> lower -> aot -> write), `inspect`,
and the `gptoss-export` command line."""
