-- What each enhancement's LLM call used: prompt template version, model,
-- tokens in and out, and cost when the provider reports it.
ALTER TABLE enhancement_history ADD COLUMN prompt_version TEXT;
ALTER TABLE enhancement_history ADD COLUMN model TEXT;
ALTER TABLE enhancement_history ADD COLUMN tokens_in INTEGER;
ALTER TABLE enhancement_history ADD COLUMN tokens_out INTEGER;
ALTER TABLE enhancement_history ADD COLUMN cost_usd REAL;
