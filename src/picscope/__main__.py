from picscope.cli import entry

entry()
