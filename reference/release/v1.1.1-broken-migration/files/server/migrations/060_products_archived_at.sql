-- Soft-archive products instead of deleting them.
ALTER TABLE public.products ADD COLUMN IF NOT EXISTS archived_at timestamptz;
UPDATE public.products SET archived_at = updated_at WHERE NOT active AND archived_at IS NULL;
