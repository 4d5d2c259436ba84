VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-soak up down venv clean rbac cluster temporal

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kepler dev up
	$(VENV)/bin/kepler demo

# pytest-xdist workers: most tests wait on servers (Temporal, the stand-ins, a control
# plane), not on a CPU, so a 2-core machine runs more workers than cores
TEST_WORKERS ?= 4

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=25 -n $(TEST_WORKERS) --dist loadgroup

bench: $(STAMP)
	$(PY) bench/run.py

bench-soak: $(STAMP)
	$(PY) bench/soak.py

# the worker's RBAC rules, from the Kubernetes calls in activities/ (deploy/rbac.py), and
# the console's read-only role, from the reads in its source (deploy/rbac_console.py)
rbac: $(STAMP)
	$(PY) -m deploy.rbac > deploy/kubernetes/base/rbac-rules.yaml
	$(PY) -m deploy.rbac namespace-cleanup > deploy/kubernetes/base/rbac-namespace-cleanup.yaml
	$(PY) -m deploy.rbac console > deploy/kubernetes/base/rbac-console.yaml

# the real Kubernetes control plane for the realk8s tests, built once into ~/.cache/kepler/k8s/
# (sandbox/cluster/build.sh; versions in sandbox/cluster/versions.env)
cluster:
	sandbox/cluster/build.sh

# the real Temporal server and its SQL tool for the realtemporal tests and
# `kepler dev up --temporal server`, built once into ~/.cache/kepler/temporal/
# (sandbox/temporal/build.sh; the version in sandbox/cluster/versions.env)
temporal:
	sandbox/temporal/build.sh

up: $(STAMP)
	$(VENV)/bin/kepler dev up

down: $(STAMP)
	$(VENV)/bin/kepler dev down

clean:
	rm -rf $(VENV) .kepler *.egg-info
