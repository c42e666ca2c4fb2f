"""Test-only helpers of diva_ext (imported by the test suite, never by the package itself)."""
