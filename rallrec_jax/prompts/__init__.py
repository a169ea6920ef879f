"""Every prompt the system writes, in one place: CTR templates (ctr.py), item-description prompts
(descriptions.py) and the knowledge-injected reasoning prompts (reasoning.py). Text only: these modules import
nothing of the stages, so retrieval, generation and reasoning all read their prompts from here."""
