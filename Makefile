# Two commands do all the set-up: `make run` and `make test` (see README.md).
VENV    := .venv
PY      := $(VENV)/bin/python
MPIRUN  := $(VENV)/bin/mpirun
NP      ?= 2
ARGS    ?=
# one torch/BLAS thread per rank on the 2-core machines this targets
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: venv run test test-serial test-mpi bench clean

venv:
	@bash scripts/bootstrap.sh

run: venv
	$(MPIRUN) -n $(NP) $(PY) solve.py problem=darcy $(ARGS)

test: venv
	bash scripts/run_tests.sh

bench: venv
	$(PY) bench/fem_darcy.py

clean:
	rm -rf $(VENV) outputs .cache .pytest_cache
