; Definitions, `use` declarations, and the comments/attributes that precede items.
; (References are the identifier tokens outside comments and literals: parse.py finds them
; with two C-level regex passes, ~10x cheaper than capturing every identifier node.)
; Capture names are data for indexer/parse.py, which runs this one query per file:
;   definition.<kind>  an item node (its name is the node's `name` field);
;                      fn/method/trait_fn is decided from the enclosing item
;   use, attribute, doc.outer, doc.inner, error: the other nodes parse.py reads.

(function_item) @definition.fn
(function_signature_item) @definition.fn
(struct_item) @definition.struct
(enum_item) @definition.enum
(enum_variant) @definition.variant
(union_item) @definition.union
(trait_item) @definition.trait
(impl_item) @definition.impl
(mod_item) @definition.mod
(const_item) @definition.const
(static_item) @definition.static
(type_item) @definition.type
(associated_type) @definition.type
(macro_definition) @definition.macro
(field_declaration name: (field_identifier)) @definition.field

(use_declaration) @use

(attribute_item) @attribute
(line_comment outer: (outer_doc_comment_marker)) @doc.outer
(block_comment outer: (outer_doc_comment_marker)) @doc.outer
(line_comment inner: (inner_doc_comment_marker)) @doc.inner
(block_comment inner: (inner_doc_comment_marker)) @doc.inner

(ERROR) @error
