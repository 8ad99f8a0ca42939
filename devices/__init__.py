"""Device profiles (CPU, Jetson, Cortex-M) as data, detection and backend choice."""
