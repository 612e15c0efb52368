"""Ways in from prompt flow: its flow folders (`flows`) and its connection YAML (`connections`)."""
