"""End to end: the kepler CLI, a real dev server and worker, and the sandbox."""
