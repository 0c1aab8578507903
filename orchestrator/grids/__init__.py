"""Grid files into runs: ``parse`` reads and checks a grid file, ``expand`` turns its points into
run specs (one resolved run config and run id each), ``estimate`` prices and orders them."""
