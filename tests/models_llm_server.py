"""Run the xllamacpp OpenAI-compatible server in this process until killed (used by tests/test_models_openai.py)."""

import sys
import time

import xllamacpp as xlc

p = xlc.CommonParams()
p.model.path = sys.argv[1]
p.n_ctx = 2048
p.cpuparams.n_threads = 1
p.cpuparams_batch.n_threads = 1
p.hostnames = ["127.0.0.1"]
p.port = int(sys.argv[2])
srv = xlc.Server(p)
print("LISTENING", srv.listening_address, flush=True)
while True:
    time.sleep(3600)
