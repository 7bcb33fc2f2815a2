# The two commands a fresh machine needs: `make demo` and `make test`.
.PHONY: demo test lint typecheck pytest bench clean

VENV := .venv
PY := $(VENV)/bin/python
TEST_EXTRAS := test,postgres,s3,gcs,azure

demo:
	@scripts/bootstrap.sh ""
	@$(PY) examples/demo.py

test: lint typecheck pytest

$(VENV)/.test-ready: pyproject.toml scripts/bootstrap.sh
	@scripts/system-deps.sh
	@scripts/bootstrap.sh "$(TEST_EXTRAS)"
	@touch $@

lint: $(VENV)/.test-ready
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/ruff check src tests bench examples

typecheck: $(VENV)/.test-ready
	$(VENV)/bin/mypy

# Four workers on two cores: most tests wait on real servers and subprocesses. One file per
# worker keeps module-scoped servers started once.
pytest: $(VENV)/.test-ready
	$(VENV)/bin/pytest -n 4 --dist loadfile $(PYTEST_ARGS)

bench: $(VENV)/.test-ready
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
