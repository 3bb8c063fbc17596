//! `#[derive(Type)]`: one Rust definition gives a type's Convex validator and
//! its conversions from and to `livebase_schema::Value`, so a function's
//! argument validator, its handler's argument type and the generated
//! TypeScript cannot disagree. The trait and its meaning are in
//! `livebase_schema::typed`; this crate only writes the impl.
//!
//! - A struct with named fields is an object: each field is named in
//!   camelCase (`organization_id` is `organizationId`) unless
//!   `#[livebase(rename = "…")]` says otherwise; an `Option<T>` field may be
//!   absent (`v::optional`); `#[livebase(max_len = N)]` bounds a string field
//!   (`v::string().max_len(N)`). A unit struct or `struct S {}` is `{}`.
//! - `#[livebase(flatten)]` on a field whose type is an object (a
//!   document, `Doc<T>`) puts its fields beside the struct's own: a document
//!   with a computed field is `{ #[livebase(flatten)] doc: Doc<T>, extra }`.
//! - `#[livebase(table = "todos")]` on a struct also makes it a table's
//!   document type (`Table`), so `Id<S>` and `Doc<S>` name that table.
//! - An enum is a union: a unit variant is a string literal (its name in
//!   camelCase, or `rename`), a one-field tuple variant `V(T)` is whatever
//!   `T` is — the first alternative that accepts a value is the one read.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{parse_macro_input, Attribute, Data, DeriveInput, Expr, Fields, LitStr};

#[proc_macro_derive(Type, attributes(livebase))]
pub fn derive_type(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// What `#[livebase(…)]` on an item, a field or a variant says.
#[derive(Default)]
struct Options {
    rename: Option<String>,
    max_len: Option<Expr>,
    table: Option<Expr>,
    flatten: bool,
}

fn options(attrs: &[Attribute]) -> syn::Result<Options> {
    let mut out = Options::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("livebase")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                out.rename = Some(meta.value()?.parse::<LitStr>()?.value());
            } else if meta.path.is_ident("max_len") {
                out.max_len = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("table") {
                out.table = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("flatten") {
                out.flatten = true;
            } else {
                return Err(meta.error("expected `rename`, `max_len`, `table` or `flatten`"));
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// `organization_id` → `organizationId`, `Owner` → `owner`.
fn camel_case(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for (i, c) in name.chars().enumerate() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else if i == 0 {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "#[derive(Type)] does not take generic types",
        ));
    }
    let name = &input.ident;
    let item = options(&input.attrs)?;
    let body = match &input.data {
        Data::Struct(data) => expand_struct(name, &data.fields)?,
        Data::Enum(data) => {
            if item.table.is_some() {
                return Err(syn::Error::new(
                    name.span(),
                    "a table's document is a struct",
                ));
            }
            expand_enum(&data.variants)?
        }
        Data::Union(_) => {
            return Err(syn::Error::new(
                name.span(),
                "#[derive(Type)] takes a struct or an enum",
            ))
        }
    };
    let table = item.table.map(|table| {
        quote! {
            impl ::livebase_schema::typed::Table for #name {
                const NAME: &'static str = #table;
            }
        }
    });
    Ok(quote! {
        impl ::livebase_schema::typed::Type for #name {
            #body
        }
        #table
    })
}

fn expand_struct(name: &syn::Ident, fields: &Fields) -> syn::Result<Tokens> {
    let named = match fields {
        Fields::Named(named) => named.named.iter().collect::<Vec<_>>(),
        Fields::Unit => Vec::new(),
        Fields::Unnamed(_) => {
            return Err(syn::Error::new(
                fields.span(),
                "#[derive(Type)] takes named fields (an object's)",
            ))
        }
    };
    let mut validators = Vec::new();
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for field in named {
        let ident = field.ident.as_ref().expect("named fields have names");
        let ty = &field.ty;
        let opts = options(&field.attrs)?;
        if opts.flatten {
            validators.push(quote_spanned! {ty.span()=>
                fields.extend(
                    <#ty as ::livebase_schema::typed::Type>::validator()
                        .object_fields()
                        .cloned()
                        .unwrap_or_default(),
                );
            });
            // The flattened type reads the fields it knows and ignores the rest.
            reads.push(quote_spanned! {ty.span()=>
                #ident: <#ty as ::livebase_schema::typed::Type>::from_value(
                    ::livebase_schema::Value::Object(fields.clone().into()),
                    path,
                )?
            });
            writes.push(quote_spanned! {ty.span()=>
                if let ::livebase_schema::Value::Object(inner) =
                    <#ty as ::livebase_schema::typed::Type>::into_value(self.#ident)
                {
                    out.extend(inner.into_fields());
                }
            });
            continue;
        }
        let key = opts
            .rename
            .unwrap_or_else(|| camel_case(&ident.to_string()));
        let mut validator = quote_spanned! {ty.span()=>
            <#ty as ::livebase_schema::typed::Type>::field_validator()
        };
        if let Some(max) = opts.max_len {
            validator = quote! { ::livebase_schema::typed::max_len(#validator, #max) };
        }
        validators.push(quote! {
            fields.insert(::std::string::String::from(#key), #validator);
        });
        reads.push(quote_spanned! {ty.span()=>
            #ident: <#ty as ::livebase_schema::typed::Type>::from_field(
                fields.remove(#key),
                &::std::format!("{}.{}", path, #key),
            )?
        });
        writes.push(quote_spanned! {ty.span()=>
            if let ::std::option::Option::Some(value) =
                <#ty as ::livebase_schema::typed::Type>::into_field(self.#ident)
            {
                out.insert(::std::string::String::from(#key), value);
            }
        });
    }
    let construct = match fields {
        Fields::Unit => quote! { #name },
        _ => quote! { #name { #(#reads,)* } },
    };
    Ok(quote! {
        #[allow(unused_mut)]
        fn validator() -> ::livebase_schema::Validator {
            let mut fields = ::std::collections::BTreeMap::new();
            #(#validators)*
            ::livebase_schema::Validator::Object(fields)
        }

        #[allow(unused_mut, unused_variables)]
        fn from_value(
            value: ::livebase_schema::Value,
            path: &str,
        ) -> ::std::result::Result<Self, ::livebase_schema::ValidationError> {
            let mut fields = ::livebase_schema::typed::object_fields(value, path)?;
            ::std::result::Result::Ok(#construct)
        }

        #[allow(unused_mut)]
        fn into_value(self) -> ::livebase_schema::Value {
            let mut out = ::livebase_schema::Object::new();
            #(#writes)*
            ::livebase_schema::Value::Object(out.into())
        }
    })
}

fn expand_enum(
    variants: &syn::punctuated::Punctuated<syn::Variant, syn::token::Comma>,
) -> syn::Result<Tokens> {
    let mut validators = Vec::new();
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for variant in variants {
        let ident = &variant.ident;
        let opts = options(&variant.attrs)?;
        match &variant.fields {
            Fields::Unit => {
                let literal = opts
                    .rename
                    .unwrap_or_else(|| camel_case(&ident.to_string()));
                validators.push(quote! { ::livebase_schema::v::literal(#literal) });
                reads.push(quote! {
                    if value.as_str() == ::std::option::Option::Some(#literal) {
                        return ::std::result::Result::Ok(Self::#ident);
                    }
                });
                writes.push(quote! {
                    Self::#ident => ::livebase_schema::Value::from(#literal)
                });
            }
            Fields::Unnamed(inner) if inner.unnamed.len() == 1 => {
                let ty = &inner.unnamed[0].ty;
                validators.push(quote! {
                    <#ty as ::livebase_schema::typed::Type>::validator()
                });
                reads.push(quote! {
                    if <#ty as ::livebase_schema::typed::Type>::validator()
                        .validate(&value, path)
                        .is_ok()
                    {
                        return <#ty as ::livebase_schema::typed::Type>::from_value(value, path)
                            .map(Self::#ident);
                    }
                });
                writes.push(quote! {
                    Self::#ident(inner) => ::livebase_schema::typed::Type::into_value(inner)
                });
            }
            _ => {
                return Err(syn::Error::new(
                    variant.span(),
                    "a variant is a unit (a string literal) or holds one type",
                ))
            }
        }
    }
    Ok(quote! {
        fn validator() -> ::livebase_schema::Validator {
            ::livebase_schema::v::union([#(#validators),*])
        }

        fn from_value(
            value: ::livebase_schema::Value,
            path: &str,
        ) -> ::std::result::Result<Self, ::livebase_schema::ValidationError> {
            #(#reads)*
            ::std::result::Result::Err(::livebase_schema::typed::mismatch::<Self>(&value, path))
        }

        fn into_value(self) -> ::livebase_schema::Value {
            match self {
                #(#writes,)*
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::camel_case;

    #[test]
    fn names_are_camel_cased() {
        assert_eq!(camel_case("organization_id"), "organizationId");
        assert_eq!(camel_case("text"), "text");
        assert_eq!(camel_case("Owner"), "owner");
        assert_eq!(camel_case("SplitRequired"), "splitRequired");
        assert_eq!(camel_case("_private"), "private");
    }
}
