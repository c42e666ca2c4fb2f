# The two commands of the README; both set everything up first and are idempotent.
.PHONY: run test setup emulated

run: setup
	.venv/bin/diva train --out runs/diva --overwrite

test:
	scripts/test.sh

setup:
	scripts/setup.sh

emulated: setup
	.venv/bin/python -m pytest -q -m cuda_emulated
