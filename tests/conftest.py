"""pyinfra's CLI monkey-patches the standard library with gevent when it is imported;
done after a test has started threads, it breaks their locks. Import it first."""

import pyinfra_cli  # noqa: F401
