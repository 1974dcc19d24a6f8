-- One database per service: each owns its schema and runs its own migrations.
CREATE DATABASE keel_registry;
CREATE DATABASE keel_vector_index;
CREATE DATABASE keel_serving;
CREATE DATABASE keel_feedback;
CREATE DATABASE keel_monitoring;
